"""`fineprep describe`: one MLLM description of facial changes per clip, through vLLM, an
OpenAI-compatible endpoint or transformers, written as resumable Parquet parts."""
