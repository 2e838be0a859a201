"""Challenge validators: how an integration decides that an enrollment request is genuine (design.md section 9)."""
