{
  "targets": [
    {
      "target_name": "switchboard_sqlite",
      "type": "static_library",
      "sources": [
        "<!@(node -p \"require('./cpp/sources.json').sqlite.join(' ')\")"
      ],
      "defines": [
        "<!@(node -p \"require('./cpp/sources.json').sqlite_defines.join(' ')\")"
      ],
      "cflags": ["-w", "-fvisibility=hidden"],
      "direct_dependent_settings": {
        "include_dirs": ["deps/sqlite"]
      }
    },
    {
      "target_name": "switchboard",
      "dependencies": ["switchboard_sqlite"],
      "sources": [
        "<!@(node -p \"const s=require('./cpp/sources.json'); s.core.concat(s.addon).join(' ')\")"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "include",
        "cpp"
      ],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags": ["-fvisibility=hidden"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "<!@(node -p \"process.env.SWITCHBOARD_WERROR === '1' ? '-Werror' : ''\")", "-fexceptions", "-fvisibility=hidden", "-fvisibility-inlines-hidden"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "libraries": ["-ldl", "-lpthread"]
    }
  ]
}
