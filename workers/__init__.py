"""RQ workers: the extraction job functions. Start a worker with the Procfile's `worker` line."""
