"""Everything that is about XNAT itself: its naming rules, the REST session, its listings.

See docs/xnat-behaviour.md for the server behaviour these modules follow.
"""
