# Verifies a sidechat webhook (PROTOCOL.md §8) with Ruby's OpenSSL; in a Rails controller:
#
#   skip_forgery_protection
#   def sidechat
#     ok = SidechatWebhook.valid?(request.headers["X-Sidechat-Signature"], request.raw_post,
#                                 Rails.application.credentials.sidechat_webhook_secret)
#     return head :unauthorized unless ok
#     event = JSON.parse(request.raw_post)
#     # Drop a retry you already handled: remember event["id"] (X-Sidechat-Event-Id).
#     head :ok
#   end
require "openssl"

module SidechatWebhook
  # Refuse calls signed longer ago than this: a captured call cannot be replayed later.
  TOLERANCE_S = 300

  def self.valid?(header, body, secret, now: Time.now.to_i)
    fields = header.to_s.split(",").map { |part| part.strip.split("=", 2) }
    t = fields.find { |key, _| key == "t" }&.last
    return false unless t&.match?(/\A\d+\z/) && (now - t.to_i).abs <= TOLERANCE_S

    expected = OpenSSL::HMAC.hexdigest("SHA256", secret, "#{t}.#{body}")
    fields.any? do |key, value|
      key == "v1" && value.to_s.bytesize == expected.bytesize &&
        OpenSSL.fixed_length_secure_compare(value, expected)
    end
  end
end

# ruby rails_verify.rb "<X-Sidechat-Signature>" < body  (exit 0: genuine)
if $PROGRAM_NAME == __FILE__
  body = $stdin.binmode.read
  exit(SidechatWebhook.valid?(ARGV.fetch(0), body, ENV.fetch("SIDECHAT_WEBHOOK_SECRET")) ? 0 : 1)
end
