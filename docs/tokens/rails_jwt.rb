# Rails: a JWT with the `jwt` gem, which can also carry a display name and the staff role.
require "jwt"

def sidechat_jwt(user_id, secret:, name: nil, staff: false, ttl: 3600)
  claims = { sub: user_id.to_s, exp: Time.now.to_i + ttl }
  claims[:name] = name if name
  claims[:role] = "staff" if staff
  JWT.encode(claims, secret, "HS256")
end

puts sidechat_jwt(ARGV.fetch(0), secret: ENV.fetch("SIDECHAT_JWT_SECRET"), staff: ARGV[1] == "staff")
