"""fineprompts: prompts as versioned data (YAML files beside this module), loaded by id and hashed."""
