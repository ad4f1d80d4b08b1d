"""Run configuration: settings from TOML and flags, the rules they must meet, host presets."""
