"""The nightly job's stages as plain functions, plus the CLI and configuration."""
