#!/usr/bin/env bash
# Hostile input from the API's own description: schemathesis reads GET /api/v1/openapi.json from a
# freshly started server and sends what the document allows and what it does not, checking that
#
# - nothing answers 5xx (not_a_server_error);
# - every answer has a status, content type and body the document declares for that operation
#   (status_code_conformance, content_type_conformance, response_schema_conformance);
# - whatever the document says is invalid is refused (negative_data_rejection);
# - the token is not ignored (ignored_auth), and methods the document does not list are refused
#   (unsupported_method).
#
# Left out on purpose: positive_data_acceptance, since the document cannot say everything the
# server checks (a contact needs one of first_name, last_name, email or phone; references must
# exist; emails are unique), so "valid by the schema" still earns a fair 409 or 422; and the
# stateful checks (use_after_free, ensure_resource_availability), since the document has no links.
#
# URLs in bodies are rewritten onto 127.0.0.1:9 by a hook (below), so no generated webhook endpoint
# makes the server send anywhere but this machine; after the run, the saved endpoints are checked.
#
# Environment: SCHEMATHESIS_MAX_EXAMPLES (default 50 per operation), SCHEMATHESIS_SEED (default
# random; the run prints its seed), SCHEMATHESIS_VENV (default target/schemathesis-venv),
# ESTATE_CRM_BIN (a server binary to test instead of building target/debug/estate-crm).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
venv="${SCHEMATHESIS_VENV:-target/schemathesis-venv}"

echo "== schemathesis $SCHEMATHESIS_VERSION"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "version $SCHEMATHESIS_VERSION"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# ESTATE_CRM_BIN names a server already built (CI passes the tests' own); else this builds one.
if [[ -n "${ESTATE_CRM_BIN:-}" ]]; then
    binary="$ESTATE_CRM_BIN"
else
    cargo build -p estate-crm
    binary=target/debug/estate-crm
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        wait "$server_pid" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

token="schemathesis-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
mkfifo "$work/start-line"
RUST_LOG="${RUST_LOG:-warn}" "$binary" serve --listen 127.0.0.1:0 --data-dir "$work/data" --admin-token "$token" \
    --allow-private-targets --retry-schedule 1s --delivery-timeout 2s --form-rate-per-minute 100000 \
    >"$work/start-line" 2>"$work/server.log" &
server_pid=$!
# The start line says where it listens; reading it waits for the server without polling. The rest
# of stdout goes to a file so that the server never blocks on a full pipe.
exec 3<"$work/start-line"
if ! IFS= read -r -t 60 start_line <&3; then
    echo "the server did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
fi
cat <&3 >"$work/server.out" &
echo "$start_line"
address="${start_line#*listening on http://}"
address="${address%%,*}"
base="http://$address"

cat >"$work/hooks.py" <<'PY'
"""Keeps every URL a case sends in a body on the loopback interface, at a port where nothing listens.

`before_call` runs right before each request of every phase, and it rewrites a `url` (and a REST
hook's `target_url`) in any body, not only the webhook ones, so an operation the document gains
later is covered too.
"""
import urllib.parse

import schemathesis

SAFE = "http://127.0.0.1:9/"


@schemathesis.hook
def before_call(context, case, kwargs):
    for key in ("url", "target_url"):
        body = case.body
        if isinstance(body, dict) and isinstance(body.get(key), str) and not body[key].startswith(SAFE):
            # What was generated becomes the path, so odd characters still reach the URL parser.
            # (Only a body that changes is assigned: assigning one can drop a generated body.)
            case.body = dict(body, **{key: SAFE + urllib.parse.quote(body[key], safe="")})
PY
# One worker: with two, the threads' concurrent `ast.parse` calls (Hypothesis describing a strategy)
# can trip CPython 3.11's "AST constructor recursion depth mismatch", failing a run whose every
# case passed.
# Run from the scratch directory: schemathesis keeps a replay cache (.schemathesis/) in its working
# directory, which has no place in the repository.
venv="$(cd "$venv" && pwd)"
set +e
(cd "$work" && SCHEMATHESIS_HOOKS=hooks "$venv/bin/schemathesis" run "$base/api/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection,ignored_auth,unsupported_method \
    --phases examples,coverage,fuzzing \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
    ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"} \
    --workers 1 \
    --request-timeout 10 \
    --generation-database none \
    --no-color \
    --output-truncate true)
status=$?
set -e

if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "the server died during the run:" >&2
    tail -50 "$work/server.log" >&2
    exit 1
fi
# The hook's promise, checked: every endpoint the run saved points at this machine.
"$venv/bin/python" - "$base" "$token" <<'PY'
import ipaddress, sys, urllib.parse
import requests

base, token = sys.argv[1], sys.argv[2]
page = requests.get(f"{base}/api/v1/webhooks?limit=1000", headers={"Authorization": f"Bearer {token}"}, timeout=10)
page.raise_for_status()


def is_local(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


for endpoint in page.json()["items"]:
    if not is_local(urllib.parse.urlsplit(endpoint["url"]).hostname or ""):
        sys.exit(f"an endpoint left the loopback interface: {endpoint['url']}")
PY

if grep -qiE 'panicked|internal error' "$work/server.log"; then
    echo "the server logged a panic or an internal error:" >&2
    grep -iE -A3 'panicked|internal error' "$work/server.log" | head -50 >&2
    exit 1
fi
exit "$status"
