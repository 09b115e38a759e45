"""One module per CLI command. Hydra commands expose `main(cfg)`, argv commands expose `run(argv)`."""
