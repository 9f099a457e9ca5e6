"""spreadcon.models"""
