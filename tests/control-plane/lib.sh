# Shared by start.sh and restart-apiserver.sh (sourced, not run). Expects $dir.

# spawn NAME CMD...: runs CMD in its own session, output appended to DIR/NAME.log, and
# records "NAME PID" in DIR/pids.
spawn() {
  local name="$1"; shift
  setsid "$@" >>"$dir/$name.log" 2>&1 </dev/null 9>&- &
  echo "$name $!" >>"$dir/pids"
}

# The API server's /readyz with the admin identity.
readyz() {
  curl -fsS --max-time 5 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" \
    --key "$dir/pki/admin.key" "https://127.0.0.1:$(cat "$dir/apiserver-port")/readyz" \
    >/dev/null 2>&1
}

# start.sh writes the API server's command line to DIR/kube-apiserver.args (one
# argument a line); both scripts launch it from there, so a restart uses the very same
# flags, port and etcd.
spawn_apiserver() {
  local args
  mapfile -t args <"$dir/kube-apiserver.args"
  spawn kube-apiserver "${args[@]}"
}
