"""Code generated from proto/ by `python -m opentier.devtools.protogen`. Do not edit."""
