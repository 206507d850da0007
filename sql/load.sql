-- Statements of the load job (recjobs/load.py). Bulk inserts use ? placeholders.

-- name: delete_tags
DELETE FROM tags;

-- name: delete_ratings
DELETE FROM ratings;

-- name: delete_movies
DELETE FROM movies;

-- name: insert_movie
INSERT INTO movies (movie_id, title, genres, year, imdb_id, tmdb_id) VALUES (?, ?, ?, ?, ?, ?);

-- name: insert_rating
INSERT INTO ratings (user_id, movie_id, rating, rated_at) VALUES (?, ?, ?, ?);

-- name: insert_tag
INSERT INTO tags (user_id, movie_id, tag, tagged_at) VALUES (?, ?, ?, ?);
