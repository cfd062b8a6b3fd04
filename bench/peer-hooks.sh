# mxferry as a peer of ../shared/bench/peer-forward-bench.sh (PEER_HOOKS): the
# same forwarding job as Postfix there (user@example.test -> dest@sink.test,
# transport to the sink, no DNS), SRS on, the 250 only after fsync, the
# authentication checks off (Postfix makes none). A first step for issue 14
# (bench/forward is the project's own benchmark now). As root:
#
#   cmake -S . -B build-rel -DMXF_SANITIZE=OFF -DMXF_TESTS=OFF -DCMAKE_BUILD_TYPE=Release
#   cmake --build build-rel -j --target mxferryd smtpd router deliverd bouncer workerd mxferryctl
#   MXF_BENCH_BIN=$PWD/build-rel/bin PEER_HOOKS=$PWD/bench/peer-hooks.sh \
#     PEERS="direct postfix mxferry" bash ../shared/bench/peer-forward-bench.sh
#
# Ready only when smtpd has its router link: before that a RCPT gets 451 (a
# correct answer the load generator does not retry).
peer_mxferry_version() { echo "mxferry ($MXF_BENCH_BIN)"; }
peer_mxferry_start() {
  local port=$1 sink=$2 d=$3 b=${MXF_BENCH_BIN:?set MXF_BENCH_BIN to a release build/bin}
  mkdir -p "$d"
  cat > "$d/mxferry.conf" <<CONF
[main]
hostname = gw.bench.test
spool_dir = $d/spool
data_dir = $d/data
# Nothing is looked up (transport below); a closed port, never the system's.
dns_resolver = 127.0.0.1:9
run_as_invoking_user = yes
[smtpd]
listen = 127.0.0.1:$port
greet_delay = 0
[router]
srs_domain = fwd.bench.test
[auth]
checks = no
arc = no
CONF
  "$b/mxferryctl" -c "$d/mxferry.conf" domain add example.test >/dev/null &&
  "$b/mxferryctl" -c "$d/mxferry.conf" address add dest@sink.test --verified >/dev/null &&
  "$b/mxferryctl" -c "$d/mxferry.conf" rule add example.test --to user@example.test \
    --forward dest@sink.test >/dev/null &&
  "$b/mxferryctl" -c "$d/mxferry.conf" transport set sink.test "[127.0.0.1]:$sink" >/dev/null ||
    return 1
  setsid "$b/mxferryd" -c "$d/mxferry.conf" -f > "$d/mxferryd.log" 2>&1 &
  PEER_PIDS=($!)
  local t
  for t in $(seq 300); do
    grep -q "smtpd\[[0-9]*\]: connected to router" "$d/mxferryd.log" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
peer_mxferry_stop() {
  local p=${PEER_PIDS[0]} t
  kill -TERM -- "-$p" 2>/dev/null
  for t in $(seq 100); do kill -0 -- "-$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL -- "-$p" 2>/dev/null
}
