"""otpfast.radius"""
