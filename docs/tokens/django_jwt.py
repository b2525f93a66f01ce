"""Django / Python: a JWT with PyJWT (pip install PyJWT), e.g. in a view for request.user."""
import os
import sys
import time

import jwt


def sidechat_jwt(user_id: str, secret: str, name: str | None = None, staff: bool = False, ttl: int = 3600) -> str:
    claims = {"sub": str(user_id), "exp": int(time.time()) + ttl}
    if name:
        claims["name"] = name
    if staff:
        claims["role"] = "staff"
    return jwt.encode(claims, secret, algorithm="HS256")


if __name__ == "__main__":
    print(sidechat_jwt(sys.argv[1], os.environ["SIDECHAT_JWT_SECRET"], staff=sys.argv[2:] == ["staff"]))
