# Copy to instance/config.py (or use environment variables; see README "Configuration").
ENV_NAME = "production"
SECRET_KEY = "change-me: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
# SQLALCHEMY_DATABASE_URI = "postgresql+psycopg://closeloop@db/closeloop"  # or DATABASE_URL
# REDIS_URL = "redis://127.0.0.1:6379/0"
# PUBLIC_BASE_URL = "https://feedback.example.com"
# PROXY_FIX_X_FOR = 1          # one trusted reverse proxy in front of gunicorn
# TRUSTED_HOSTS = ["feedback.example.com"]
