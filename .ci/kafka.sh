#!/usr/bin/env bash
# Single-node Apache Kafka 4.x (KRaft, combined broker+controller) for CI, jars from Maven Central.
#   .ci/kafka.sh start PORT WORKDIR   # broker on 127.0.0.1:PORT, controller on PORT+1 (or $KAFKA_CONTROLLER_PORT)
#                                     # and a SASL_SSL listener on PORT+2 (or $KAFKA_SASL_PORT), see below
#   .ci/kafka.sh stop WORKDIR
#   .ci/kafka.sh restart PORT WORKDIR   # stop, then start again keeping the data (fault-injection tests)
# Env: KAFKA_LIB (jar dir, default .ci/kafka/lib), KAFKA_HEAP (default -Xmx512m -Xms256m),
#      KAFKA_START_TIMEOUT (s, default 120), PYTHON (readiness client, default python3).
# The SASL_SSL listener (mechanisms PLAIN and SCRAM-SHA-256, user "streamrec") uses a throwaway
# self-signed certificate and a random password made at the first start in WORKDIR/sasl; the
# tests read WORKDIR/sasl/client.json (bootstrap, user, password, CA file).
set -euo pipefail

CI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$CI_DIR/kafka/pom.xml"
LIB="${KAFKA_LIB:-$CI_DIR/kafka/lib}"
PYTHON="${PYTHON:-python3}"

log() { echo "[kafka.sh] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Live (non-zombie) process running kafka.Kafka; guards against reused pids.
alive() { grep -qs kafka.Kafka "/proc/$1/cmdline" && ! grep -qs '^[0-9]* (.*) Z' "/proc/$1/stat"; }

ensure_jars() {
  # Re-copy whenever the pom changes (stamp = pom checksum); Maven itself caches in ~/.m2.
  local stamp; stamp="$(sha256sum "$POM" | cut -d' ' -f1)"
  if [[ -f "$LIB/.stamp" && "$(cat "$LIB/.stamp")" == "$stamp" ]]; then return; fi
  log "resolving Kafka jars from Maven into $LIB"
  rm -rf "$LIB"; mkdir -p "$LIB"
  local out
  out="$(mvn -B -q -f "$POM" dependency:copy-dependencies -DoutputDirectory="$LIB" 2>&1)" \
    || { echo "$out" >&2; die "mvn dependency:copy-dependencies failed"; }
  echo "$stamp" > "$LIB/.stamp"
}

java_run() {  # java_run MAINCLASS ARGS... (foreground, logging config from .ci/kafka)
  java -Djava.awt.headless=true -Dlog4j2.configurationFile="$CI_DIR/kafka/log4j2.properties" \
    -cp "$LIB/*" "$@"
}

random_cluster_id() {  # 16 random bytes, base64url without padding; avoid a leading '-' (CLI parsing)
  local id
  while id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"; [[ $id == -* ]]; do :; done
  echo "$id"
}

broker_ready() {  # a real Kafka request: list topics via aiokafka, else via Kafka's TopicCommand
  local bs="127.0.0.1:$1"
  if "$PYTHON" -c 'import aiokafka' 2>/dev/null; then
    timeout 15 "$PYTHON" - "$bs" >/dev/null 2>&1 <<'EOF'
import asyncio, sys
from aiokafka.admin import AIOKafkaAdminClient
async def main():
    admin = AIOKafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=5000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()
asyncio.run(main())
EOF
  else
    timeout 30 java -cp "$LIB/*" -Dlog4j2.configurationFile="$CI_DIR/kafka/log4j2.properties" \
      org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" --list >/dev/null 2>&1
  fi
}

sasl_material() {  # sasl_material DIR SASL_PORT: password, broker keystore, CA file, client.json (kept if present)
  local dir="$1" sport="$2"
  mkdir -p "$dir"
  if [[ ! -f "$dir/secret" ]]; then
    head -c24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$dir/secret"
    chmod 600 "$dir/secret"
  fi
  local secret; secret="$(cat "$dir/secret")"
  if [[ ! -f "$dir/broker.p12" ]]; then
    keytool -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 30 -dname CN=localhost \
      -ext SAN=ip:127.0.0.1,dns:localhost -ext BC=ca:true -keystore "$dir/broker.p12" -storetype PKCS12 \
      -storepass "$secret" -keypass "$secret" >/dev/null 2>&1 || die "keytool could not make the broker certificate"
    keytool -exportcert -rfc -alias broker -keystore "$dir/broker.p12" -storepass "$secret" \
      -file "$dir/ca.pem" >/dev/null 2>&1 || die "keytool could not export the CA certificate"
  fi
  printf '{"bootstrap": "127.0.0.1:%s", "username": "streamrec", "password": "%s", "cafile": "%s"}\n' \
    "$sport" "$secret" "$dir/ca.pem" > "$dir/client.json"
  chmod 600 "$dir/client.json"
}

start() {
  local port="$1" work; work="$(mkdir -p "$2" && cd "$2" && pwd)"
  local cport="${KAFKA_CONTROLLER_PORT:-$((port + 1))}" sport="${KAFKA_SASL_PORT:-$((port + 2))}"
  local timeout="${KAFKA_START_TIMEOUT:-120}"
  if [[ -f "$work/kafka.pid" ]] && alive "$(cat "$work/kafka.pid")"; then
    die "Kafka already running from $work (pid $(cat "$work/kafka.pid"))"
  fi
  for p in "$port" "$cport" "$sport"; do port_open "$p" && die "port $p on 127.0.0.1 is already in use"; done
  ensure_jars

  [[ "${KAFKA_KEEP_DATA:-0}" == 1 ]] || rm -rf "$work/data" "$work/sasl"
  mkdir -p "$work/data"
  sasl_material "$work/sasl" "$sport"
  local secret; secret="$(cat "$work/sasl/secret")"
  cat > "$work/server.properties" <<EOF
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_SSL://127.0.0.1:$sport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_streamrec="$secret";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$work/sasl/broker.p12
ssl.keystore.password=$secret
ssl.client.auth=none
controller.quorum.bootstrap.servers=127.0.0.1:$cport
log.dirs=$work/data
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
EOF

  if [[ "${KAFKA_KEEP_DATA:-0}" == 1 && -f "$work/data/meta.properties" ]]; then
    log "keeping the KRaft storage in $work/data"
  else
    log "formatting KRaft storage in $work/data"
    java_run kafka.tools.StorageTool format --standalone --ignore-formatted \
      -t "$(random_cluster_id)" -c "$work/server.properties" \
      --add-scram "SCRAM-SHA-256=[name=streamrec,password=$secret]" > "$work/format.log" 2>&1 \
      || { cat "$work/format.log" >&2; die "storage format failed"; }
  fi

  log "starting broker on 127.0.0.1:$port (controller :$cport), log $work/kafka.log"
  # shellcheck disable=SC2086
  setsid java ${KAFKA_HEAP:--Xmx512m -Xms256m} -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$CI_DIR/kafka/log4j2.properties" -Dkafka.logs.dir="$work/logs" \
    -cp "$LIB/*" kafka.Kafka "$work/server.properties" > "$work/kafka.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$work/kafka.pid"

  local t0=$SECONDS
  until broker_ready "$port"; do
    if ! alive "$pid"; then
      tail -n 60 "$work/kafka.log" >&2; rm -f "$work/kafka.pid"; die "broker process $pid exited during startup"
    fi
    if (( SECONDS - t0 >= timeout )); then
      tail -n 60 "$work/kafka.log" >&2; stop "$work"; die "broker not ready after ${timeout}s"
    fi
    sleep 1
  done
  log "broker ready (pid $pid) after $((SECONDS - t0))s"
}

stop() {
  local work="$1" pid
  [[ -f "$work/kafka.pid" ]] || { log "no $work/kafka.pid, nothing to stop"; return 0; }
  pid="$(cat "$work/kafka.pid")"
  if alive "$pid"; then
    log "stopping broker pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do alive "$pid" || break; sleep 0.5; done
    if alive "$pid"; then
      log "broker did not exit after 20s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while alive "$pid"; do sleep 0.2; done
    fi
  fi
  rm -f "$work/kafka.pid"
  log "stopped"
}

case "${1:-}" in
  start) [[ $# -eq 3 ]] || die "usage: $0 start PORT WORKDIR"; start "$2" "$3" ;;
  stop)  [[ $# -eq 2 ]] || die "usage: $0 stop WORKDIR"; stop "$2" ;;
  restart) [[ $# -eq 3 ]] || die "usage: $0 restart PORT WORKDIR"; stop "$3"; KAFKA_KEEP_DATA=1 start "$2" "$3" ;;
  *) die "usage: $0 start PORT WORKDIR | stop WORKDIR | restart PORT WORKDIR" ;;
esac
