"""Facts about sessions, no diagnostics: names, values, ownership, flow and lifecycles."""
