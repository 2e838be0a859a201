"""PKI: the CA identity and its key files, issuing certificates, CRLs and OCSP answers, serials,
revocation reasons, verification, and the domain records (``records``) that the store persists."""
