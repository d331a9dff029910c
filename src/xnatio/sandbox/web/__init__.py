"""The sandbox's HTTP face: XNAT's REST API over the store.

==============  ===================================================================================
``messages``    requests, answers, error pages and XNAT's answer formats
``connection``  the threaded HTTP server: reading requests, fault injection, sending answers
``routes``      every route in one table; authentication, then dispatch
``auth``        login, sessions, alias tokens (docs/xnat-behaviour.md §2)
``imports``     the import service (§3)
``prearchive``  prearchive listings, commit and actions, the archive service, Direct-Archive (§9)
``projects``    projects, subjects, experiments (§4.2, §5)
``archive``     listings of archived sessions (§4.2)
``resources``   resource files (§7)
``config``      the site's DICOM routing rules (§6.2)
``control``     the sandbox's own fault switches
==============  ===================================================================================
"""
