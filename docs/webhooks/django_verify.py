"""Verifies a sidechat webhook (PROTOCOL.md §8) with the standard library; in Django:

    @csrf_exempt
    def sidechat(request):
        if not valid(request.headers.get("X-Sidechat-Signature"), request.body,
                     settings.SIDECHAT_WEBHOOK_SECRET):
            return HttpResponse(status=401)
        event = json.loads(request.body)
        # Drop a retry you already handled: remember event["id"] (X-Sidechat-Event-Id).
        return HttpResponse(status=200)
"""
import hashlib
import hmac
import os
import sys
import time

# Refuse calls signed longer ago than this: a captured call cannot be replayed later.
TOLERANCE_S = 300


def valid(header, body: bytes, secret: str, now=None) -> bool:
    now = int(time.time()) if now is None else now
    fields = [part.strip().split("=", 1) for part in (header or "").split(",")]
    fields = [(f[0], f[1]) for f in fields if len(f) == 2]
    t = next((value for key, value in fields if key == "t"), None)
    if t is None or not t.isdigit() or abs(now - int(t)) > TOLERANCE_S:
        return False
    expected = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(key == "v1" and hmac.compare_digest(value, expected) for key, value in fields)


# python3 django_verify.py "<X-Sidechat-Signature>" < body  (exit 0: genuine)
if __name__ == "__main__":
    sys.exit(0 if valid(sys.argv[1], sys.stdin.buffer.read(), os.environ["SIDECHAT_WEBHOOK_SECRET"]) else 1)
