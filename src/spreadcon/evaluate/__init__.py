"""spreadcon.evaluate"""
