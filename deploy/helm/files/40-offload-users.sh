#!/bin/sh
# Run by the official nginx image before nginx starts (mounted into /docker-entrypoint.d/). From the
# basic-auth users in $OFFLOAD_PROXY_SECRETS/htpasswd it writes, into $OFFLOAD_PROXY_STATE:
#   users.map  one exact, case-sensitive map key per user ("~^<user>$" 1;), so nginx knows who exists;
#   htpasswd   the same users plus "offload-decoy", whose hash is the first user's (same algorithm, same
#              cost): an unknown user's attempt is checked against it, so it takes as long as a known
#              user's wrong password and the answer's timing does not tell which names exist.
set -eu
secrets="${OFFLOAD_PROXY_SECRETS:?OFFLOAD_PROXY_SECRETS: the directory with htpasswd and bearer-tokens.map}"
state="${OFFLOAD_PROXY_STATE:?OFFLOAD_PROXY_STATE: a writable directory for the proxy's derived files}"
mkdir -p "$state"
users=$(grep -v '^[[:space:]]*#' "$secrets/htpasswd" | grep ':' || true)
printf '%s\n' "$users" | grep ':' | cut -d: -f1 \
    | sed -e 's/[][\\.^$*+?(){}|"]/\\&/g' -e 's/.*/"~^&$" 1;/' > "$state/users.map.new" || true
{
    printf '%s\n' "$users" | grep ':' || true
    first_hash=$(printf '%s\n' "$users" | grep ':' | head -n 1 | cut -d: -f2)
    if [ -n "$first_hash" ]; then
        printf 'offload-decoy:%s\n' "$first_hash"
    fi
} > "$state/htpasswd.new"
mv "$state/users.map.new" "$state/users.map"
mv "$state/htpasswd.new" "$state/htpasswd"
