{
  "targets": [
    {
      "target_name": "socksgate_native",
      "conditions": [
        ["OS=='linux'", {
          "sources": ["env.c", "reactor.c", "udp-relay.c", "tcp-conn.c", "tcp-tunnel.c"],
          "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
        }, {
          "type": "none"
        }]
      ]
    }
  ]
}
