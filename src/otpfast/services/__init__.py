"""otpfast.services"""
