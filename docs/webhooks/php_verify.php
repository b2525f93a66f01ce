<?php
// Verifies a sidechat webhook (PROTOCOL.md §8) with PHP's hash extension; in a plain
// endpoint (or a Laravel route, with $request->getContent() as the body):
//
//   $body = file_get_contents('php://input');
//   if (!sidechat_webhook_valid($_SERVER['HTTP_X_SIDECHAT_SIGNATURE'] ?? '', $body, getenv('SIDECHAT_WEBHOOK_SECRET'))) {
//       http_response_code(401); exit;
//   }
//   $event = json_decode($body, true);
//   // Drop a retry you already handled: remember $event['id'] (X-Sidechat-Event-Id).

// Refuse calls signed longer ago than this: a captured call cannot be replayed later.
const SIDECHAT_TOLERANCE_S = 300;

function sidechat_webhook_valid(string $header, string $body, string $secret, ?int $now = null): bool
{
    $now ??= time();
    $t = null;
    $signatures = [];
    foreach (explode(',', $header) as $part) {
        $field = explode('=', trim($part), 2);
        if (count($field) !== 2) continue;
        if ($field[0] === 't') $t = $field[1];
        if ($field[0] === 'v1') $signatures[] = $field[1];
    }
    if ($t === null || !ctype_digit($t) || abs($now - (int) $t) > SIDECHAT_TOLERANCE_S) return false;
    $expected = hash_hmac('sha256', "$t.$body", $secret);
    foreach ($signatures as $signature) {
        if (hash_equals($expected, $signature)) return true;
    }
    return false;
}

// php php_verify.php "<X-Sidechat-Signature>" < body  (exit 0: genuine)
if (realpath($argv[0] ?? '') === __FILE__) {
    exit(sidechat_webhook_valid($argv[1], file_get_contents('php://stdin'), getenv('SIDECHAT_WEBHOOK_SECRET')) ? 0 : 1);
}
