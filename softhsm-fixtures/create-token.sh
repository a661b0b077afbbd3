#!/usr/bin/env bash
# Creates a throw-away SoftHSM2 token holding the AES-256 key a KMS node is
# sealed with, in a directory of its own (never the system token directory),
# and prints the settings to export.
#
#   softhsm-fixtures/create-token.sh [DIR] [--key-file FILE] [--label TOKEN] [--pin PIN] [--key-label LABEL]
#
# --key-file imports the 32 bytes of FILE; without it a fresh random key is
# written to DIR/key.bin (mode 0600) so that it can be imported into a second
# token (another node that must share trust: same bytes, same derived root
# identity and cluster TLS). Delete DIR to delete the token.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="" key_file="" label="kms" pin="1234" key_label="kms-root"
while [ $# -gt 0 ]; do
  case "$1" in
    --key-file) key_file="$2"; shift 2 ;;
    --label) label="$2"; shift 2 ;;
    --pin) pin="$2"; shift 2 ;;
    --key-label) key_label="$2"; shift 2 ;;
    -*) echo "create-token: unknown option $1" >&2; exit 2 ;;
    *) dir="$1"; shift ;;
  esac
done
[ -n "$dir" ] || dir="$(mktemp -d -t kms-softhsm.XXXXXX)"
mkdir -p "$dir/tokens"
dir="$(cd "$dir" && pwd)"

module=""
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
  [ -f "$m" ] && { module="$m"; break; }
done
[ -n "$module" ] || { echo "create-token: SoftHSM2 is not installed: apt-get install -y softhsm2" >&2; exit 1; }
command -v pkcs11-tool >/dev/null || { echo "create-token: pkcs11-tool is missing: apt-get install -y opensc" >&2; exit 1; }

sed "s|@TOKENDIR@|$dir/tokens|" "$here/softhsm2.conf.template" > "$dir/softhsm2.conf"
export SOFTHSM2_CONF="$dir/softhsm2.conf"
softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin "$pin$pin" >/dev/null

if [ -z "$key_file" ]; then
  key_file="$dir/key.bin"
  (umask 077; head -c 32 /dev/urandom > "$key_file")
fi
[ "$(stat -c %s "$key_file")" = 32 ] || { echo "create-token: $key_file must hold exactly 32 bytes" >&2; exit 1; }
pkcs11-tool --module "$module" --token-label "$label" --login --pin "$pin" \
  --write-object "$key_file" --type secrkey --key-type AES:32 --label "$key_label" \
  --usage-decrypt --sensitive >/dev/null

cat <<OUT
export SOFTHSM2_CONF=$dir/softhsm2.conf
export KMS_HSM_PKCS11_MODULE=$module
export KMS_HSM_PKCS11_TOKEN=$label
export KMS_HSM_PKCS11_PIN=$pin
export KMS_HSM_PKCS11_KEY=$key_label
OUT
