"""Challenge validators: how an integration decides that an enrollment request is genuine (README "Validators")."""
