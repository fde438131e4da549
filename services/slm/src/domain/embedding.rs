//! Embedding calls: what may be asked, and what an answer must be to be passed on.
//! A vector's size is the model's: an answer of another size is refused, never cut or
//! padded, because a vector of the wrong size stored beside the others would make every
//! later search wrong without a word.

/// Texts one call may embed (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;
/// Characters one text may have (OpenAI's 8,192-token limit, at a generous 4 a token).
pub const MAX_INPUT_CHARS: usize = 32_768;

/// Texts embedded, in the order asked, and the tokens they took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u64,
}

/// Checks the texts of a call; the message names what is wrong.
pub fn check_inputs(texts: &[String]) -> Result<(), (String, String)> {
    if texts.is_empty() {
        return Err(("input".into(), "names at least one text".into()));
    }
    if texts.len() > MAX_INPUTS {
        return Err(("input".into(), format!("holds at most {MAX_INPUTS} texts")));
    }
    for (i, text) in texts.iter().enumerate() {
        if text.trim().is_empty() {
            return Err((format!("input[{i}]"), "is not empty".into()));
        }
        if text.chars().count() > MAX_INPUT_CHARS {
            return Err((
                format!("input[{i}]"),
                format!("is at most {MAX_INPUT_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

/// Checks an upstream's answer: one vector per text, each of `size` finite numbers.
pub fn check_answer(answer: &Embeddings, texts: usize, size: usize) -> Result<(), String> {
    if answer.vectors.len() != texts {
        return Err(format!(
            "the model returned {} vectors for {texts} texts",
            answer.vectors.len()
        ));
    }
    if let Some(wrong) = answer.vectors.iter().find(|v| v.len() != size) {
        return Err(format!(
            "the model returned a vector of {} numbers where its profile says {size}",
            wrong.len()
        ));
    }
    if answer.vectors.iter().flatten().any(|x| !x.is_finite()) {
        return Err("the model returned a vector that is not all numbers".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_of_the_wrong_size_is_refused_not_cut() {
        let answer = Embeddings {
            vectors: vec![vec![0.0; 4], vec![0.0; 3]],
            prompt_tokens: 2,
        };
        assert!(
            check_answer(&answer, 2, 4)
                .unwrap_err()
                .contains("3 numbers")
        );
        assert!(
            check_answer(&answer, 3, 4)
                .unwrap_err()
                .contains("2 vectors")
        );
        let nan = Embeddings {
            vectors: vec![vec![f32::NAN; 4]],
            prompt_tokens: 1,
        };
        assert!(check_answer(&nan, 1, 4).is_err());
        let good = Embeddings {
            vectors: vec![vec![0.5; 4]],
            prompt_tokens: 1,
        };
        assert!(check_answer(&good, 1, 4).is_ok());
    }

    #[test]
    fn inputs_name_the_text_that_is_wrong() {
        assert_eq!(check_inputs(&[]).unwrap_err().0, "input");
        let texts = vec!["fine".to_owned(), "  ".to_owned()];
        assert_eq!(check_inputs(&texts).unwrap_err().0, "input[1]");
        let long = vec!["x".repeat(MAX_INPUT_CHARS + 1)];
        assert_eq!(check_inputs(&long).unwrap_err().0, "input[0]");
        assert!(check_inputs(&["a".to_owned()]).is_ok());
    }
}
