# Shell helpers shared by the demo and the buf interop test (source this file).

# kubelet_publish DIR KEY CA CHAIN...: lays certificate material out the way kubelet updates a
# mounted kubernetes.io/tls Secret: a new ..TIMESTAMP directory (tls.crt = the CHAIN files in
# order, tls.key 0600, ca.crt), a ..data_tmp symlink renamed over ..data in one step, stable
# top-level links into ..data, and the previous version directory removed.
kubelet_publish() {
  local dir=$1 key=$2 ca=$3 stamp old file
  shift 3
  stamp="..$(date -u +%Y_%m_%d_%H_%M_%S.%N)"
  mkdir -p "$dir/$stamp"
  cat "$@" >"$dir/$stamp/tls.crt"
  install -m 0600 "$key" "$dir/$stamp/tls.key"
  cp "$ca" "$dir/$stamp/ca.crt"
  old=$(readlink "$dir/..data" || true)
  ln -s "$stamp" "$dir/..data_tmp"
  mv -T "$dir/..data_tmp" "$dir/..data"
  for file in tls.crt tls.key ca.crt; do
    [[ -L $dir/$file ]] || ln -s "..data/$file" "$dir/$file"
  done
  if [[ -n $old ]]; then rm -rf "${dir:?}/$old"; fi
}
