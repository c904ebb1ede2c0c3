# Sourced by the scripts in this directory: makes sure a fresh Debian machine can build `hourglass`.
# librdkafka and SQLite are compiled from source by their crates, which needs a C toolchain, perl,
# pkg-config, and zlib's and OpenSSL's headers (librdkafka's TLS and SASL/SCRAM); they are installed with apt
# when missing.

printf '\n==> %s\n' "build prerequisites (C toolchain for librdkafka and SQLite)" >&2
missing=()
for tool in cc make perl pkg-config; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})) || ! [[ -e /usr/include/zlib.h && -e /usr/include/openssl/ssl.h ]]; then
    echo "installing build-essential perl pkg-config zlib1g-dev libssl-dev (missing: ${missing[*]:-headers})" >&2
    apt-get update -qq && apt-get install -y -qq build-essential perl pkg-config zlib1g-dev libssl-dev >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust 1.95 (rustup)" >&2; exit 1; }
unset missing
