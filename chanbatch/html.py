"""Small HTML builders for notebook display and reports: escaped text, tables. No imports
beyond the standard library, so every layer may use it."""
