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
``resources``   resources and their files (§7, §14.4)
``downloads``   a listing's files as one zip, tar or tar.gz (§14.5)
``columns``     ``columns=``, ``xsiType=`` and filters on listings (§14.6)
``site``        the site's build, data-type schemas and search elements (§14.1-§14.3)
``config``      the site's DICOM routing rules (§6.2)
``control``     the sandbox's own fault switches
==============  ===================================================================================
"""
