"""Integrations with other libraries, each imported only when used (as Burr's
``burr.integrations``)."""
