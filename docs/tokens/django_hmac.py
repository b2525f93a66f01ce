"""Django / Python: a simple HMAC token with the standard library."""
import hashlib
import hmac
import os
import sys
import time


def sidechat_token(user_id: str, secret: str, ttl: int = 3600) -> str:
    exp = int(time.time()) + ttl
    signed = f"{user_id}:{exp}"
    return f"{signed}:" + hmac.new(secret.encode(), signed.encode(), hashlib.sha256).hexdigest()


if __name__ == "__main__":
    print(sidechat_token(sys.argv[1], os.environ["SIDECHAT_HMAC_SECRET"]))
