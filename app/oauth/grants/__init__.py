"""OAuth grants, one module each (RFC 6749 §4, §6), at Authlib's hooks.

Each grant decides what it issues and hands the token step one
:class:`~app.oauth.issuance.Issuance`; :mod:`.extensions` holds what the
authorization endpoint adds to Authlib's checks.
"""
