"""Generated from proto/opentier/intelligence/v1 by `python -m opentier.devtools.protogen`. Do not edit."""
