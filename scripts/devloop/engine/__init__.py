"""The vLLM engine: the pod's entrypoint (settings to `vllm serve`), the local `devloop serve`,
readiness (`devloop health`), crash diagnosis, what the container may use (CPUs, memory, AMX),
and the offline random-weight models (`tinymodel/`)."""
