"""The certificate authority: the two CAs, their generations, the profile and paired issuance.

Whatever touches a CA private key lives here and nowhere else.
"""
