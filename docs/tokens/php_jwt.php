<?php
// PHP: an HS256 JWT with nothing but the standard library.
function base64url(string $data): string {
    return rtrim(strtr(base64_encode($data), '+/', '-_'), '=');
}

function sidechat_jwt(string $userId, string $secret, bool $staff = false, int $ttl = 3600): string {
    $claims = ['sub' => $userId, 'exp' => time() + $ttl];
    if ($staff) {
        $claims['role'] = 'staff';
    }
    $signed = base64url(json_encode(['alg' => 'HS256', 'typ' => 'JWT'])) . '.' . base64url(json_encode($claims));
    return $signed . '.' . base64url(hash_hmac('sha256', $signed, $secret, true));
}

echo sidechat_jwt($argv[1], getenv('SIDECHAT_JWT_SECRET'), ($argv[2] ?? '') === 'staff'), "\n";
