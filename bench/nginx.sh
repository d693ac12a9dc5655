# nginx.sh: the nginx that the benches compare zgate with, one config for all of them (sourced by
# bench/proxy-vs-peers.sh and bench/tls-handshake.sh).
#
# nginx_conf DIR WORKERS BACKEND_PORT SERVER...  prints an nginx.conf: pid, logs and temp paths
#   under DIR (made here), DIR/cert.pem and DIR/key.pem for TLS, WORKERS worker processes, an
#   upstream `backend` on 127.0.0.1:BACKEND_PORT with keep-alive connections, and one `server`
#   block per SERVER argument (its contents: a `listen`, then usually $NGINX_PROXY).

# Every request to the backend, over the upstream's keep-alive connections.
NGINX_PROXY='location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }'

nginx_conf() {
  local dir=$1 workers=$2 backend_port=$3 user="" server
  shift 3
  [ "$(id -u)" -eq 0 ] && user="user root;"
  mkdir -p "$dir/nginx-temp"
  cat <<EOF
$user
worker_processes $workers;
daemon off;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $dir/nginx-temp/body;
  proxy_temp_path $dir/nginx-temp/proxy;
  fastcgi_temp_path $dir/nginx-temp/fastcgi;
  uwsgi_temp_path $dir/nginx-temp/uwsgi;
  scgi_temp_path $dir/nginx-temp/scgi;
  tcp_nodelay on;
  keepalive_requests 10000000;
  keepalive_timeout 60s;
  ssl_certificate $dir/cert.pem;
  ssl_certificate_key $dir/key.pem;
  # TLS 1.3 as zgate and HAProxy negotiate it: nginx before 1.23.4 enables only TLS 1.0-1.2
  # by default, and a resumed TLS 1.2 session skips the key exchange that TLS 1.3's resumption
  # (PSK with (EC)DHE) does, so the rows would not compare the same handshake.
  ssl_protocols TLSv1.2 TLSv1.3;
  # For a server that logs whether its TLS sessions resumed (proxy-vs-peers.sh's probe).
  log_format reused '\$ssl_session_reused \$ssl_protocol';
  upstream backend {
    server 127.0.0.1:$backend_port;
    keepalive 256;
    keepalive_requests 10000000;
    keepalive_timeout 90s;
  }
EOF
  for server in "$@"; do
    echo "  server { $server }"
  done
  echo "}"
}
