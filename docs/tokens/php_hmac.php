<?php
// PHP (Laravel, Symfony, WordPress): a simple HMAC token with hash_hmac.
function sidechat_token(string $userId, string $secret, int $ttl = 3600): string {
    $exp = time() + $ttl;
    return "$userId:$exp:" . hash_hmac('sha256', "$userId:$exp", $secret);
}

echo sidechat_token($argv[1], getenv('SIDECHAT_HMAC_SECRET')), "\n";
