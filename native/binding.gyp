{
  "targets": [
    {
      "target_name": "socksgate_native",
      "conditions": [
        ["OS=='linux'", {
          "sources": ["udp-relay.c", "tcp-relay.c", "tcp-front.c", "reactor.c"],
          "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
        }, {
          "type": "none"
        }]
      ]
    }
  ]
}
