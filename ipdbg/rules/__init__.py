"""`ipdbg rules`: the iptables model, the iptables-save parser and iptables' own listings.

Pure parts (no subprocess, no /proc): ``model`` (dataclasses), ``parse``
(``iptables-save -c`` text -> ``Ruleset``), ``listing`` (``Ruleset`` -> the exact
text of ``iptables -L`` / ``-S``). Name lookups for non-numeric listings go
through an injected resolver (``resolver.SystemResolver`` does what iptables does).
"""
