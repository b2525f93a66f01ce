# Rails: a simple HMAC token with OpenSSL (no gem needed).
# In an app: put this in a helper and render the token into the page for the signed-in user.
require "openssl"

def sidechat_token(user_id, secret:, ttl: 3600)
  exp = Time.now.to_i + ttl
  "#{user_id}:#{exp}:" + OpenSSL::HMAC.hexdigest("SHA256", secret, "#{user_id}:#{exp}")
end

puts sidechat_token(ARGV.fetch(0), secret: ENV.fetch("SIDECHAT_HMAC_SECRET"))
