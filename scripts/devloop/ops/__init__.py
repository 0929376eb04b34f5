"""Operating the dev loop: `devloop doctor` (is this machine ready?, `doctor/`) and
`devloop model-cache` (keep the model cache volume across a cluster reinstall, `modelcache/`)."""
