"""ASN.1 toolkit: the BER reader, the DER writer and the one OID table. Imports nothing of scep-ca."""
