-- Per release: objects ingested, objects quarantined, and how many ingested objects carry each label.
-- One row per (release, label); a release without labels has one row with label_name NULL.
WITH objects AS (
    SELECT release, count(*) AS objects, count(ra) AS with_coordinates
    FROM cutouts
    GROUP BY release
),
quarantined AS (
    -- object-level rows only: a release-level problem (a broken catalog) has neither object nor path
    SELECT release, count(*) AS quarantined
    FROM quarantine
    WHERE object_id IS NOT NULL OR source_path IS NOT NULL
    GROUP BY release
),
releases AS (
    SELECT release FROM objects
    UNION
    SELECT release FROM quarantine
),
labelled AS (
    SELECT
        l.release,
        l.name AS label_name,
        count(DISTINCT l.object_id) AS labelled_objects,
        count(DISTINCT l.value) AS distinct_values
    FROM labels AS l
    JOIN cutouts AS c ON c.release = l.release AND c.object_id = l.object_id
    WHERE l.value IS NOT NULL AND l.value <> ''
    GROUP BY l.release, l.name
)
SELECT
    r.release,
    coalesce(o.objects, 0) AS objects,
    coalesce(o.with_coordinates, 0) AS with_coordinates,
    coalesce(q.quarantined, 0) AS quarantined,
    lb.label_name,
    coalesce(lb.labelled_objects, 0) AS labelled_objects,
    lb.distinct_values
FROM releases AS r
LEFT JOIN objects AS o ON o.release = r.release
LEFT JOIN quarantined AS q ON q.release = r.release
LEFT JOIN labelled AS lb ON lb.release = r.release
ORDER BY r.release, lb.label_name NULLS FIRST
