-- A tenant profile tunes a platform profile (its base) and keeps no upstream, model or
-- price of its own; platform admins' profiles are the rows of the tenant `*` (no
-- tenant id can be `*`). Tenant rows from before have no base and are no longer served:
-- their prices were the tenant's own.
ALTER TABLE model_profiles ADD COLUMN base TEXT NOT NULL DEFAULT '';
CREATE INDEX model_profiles_by_base ON model_profiles (base);
