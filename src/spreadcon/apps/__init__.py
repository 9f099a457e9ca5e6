"""spreadcon.apps"""
