"""spreadcon.experiments"""
