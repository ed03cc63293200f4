"""MUSHRA listening tests (ITU-R BS.1534-3): export packages and analyse ratings."""
